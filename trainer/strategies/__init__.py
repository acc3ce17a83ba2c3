"""Training strategies: how the actor's model is wrapped, stepped and saved (`factory.make_strategy` picks one)."""
