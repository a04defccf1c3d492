"""zflock: move and replicate container data volumes between hosts with ZFS."""

import warnings

__version__ = "0.1.0"

# cryptography 51 deprecates DSA, and asyncssh 2.24 names DSA types when it is
# imported: nine lines of CryptographyDeprecationWarning on stderr in every process
# that loads it (the agent, the tests' in-process clients), which break the one-line
# errors that operators and scripts read. zflock uses no DSA key (ed25519 host and
# client keys), so only that warning, and only from asyncssh, is silenced.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")
