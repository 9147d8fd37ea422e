"""RL math as pure functions, tested against hand-computed numbers."""
