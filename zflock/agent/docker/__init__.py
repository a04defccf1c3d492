"""The Docker volume plugin served by the agent (docs/docker.md).

model.py decides (pure), service.py sends the CLI's requests to the agents,
http.py speaks Docker's protocol on a unix socket.
"""
