from zflock.cli.app import main

main()
