"""The `poster-fast` sub-commands, one module each (`add_arguments(parser)`, `run(args)`)."""
