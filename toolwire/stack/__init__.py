"""Running toolwire: the command line (`toolwire up`, `toolwire serve <service>`), the launcher
that starts the four services as one stack, the demo, and where a model's files come from."""
