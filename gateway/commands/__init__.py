"""The `drgw` subcommands: one module per command group, each with `register(subparsers)`.

A command module keeps its heavy imports (web3, py-evm, matplotlib) inside its run function so that
`drgw --help` and the agent stay small on a Raspberry Pi.
"""
