"""compfair's Textual app. Talks to the engine only through `engine.api`."""
