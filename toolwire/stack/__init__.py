"""Running toolwire: the command line (`toolwire up`, `toolwire serve <service>`), the launcher
that starts the four services as one stack, and the demo that `make up` runs."""
