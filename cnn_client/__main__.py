"""`python -m cnn_client`: the `cnn` command without its console script."""

from cnn_client.cli import main

main()
