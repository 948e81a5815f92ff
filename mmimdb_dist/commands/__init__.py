"""One module per `mmimdb-dist` subcommand: argument parsing and wiring only."""
