"""The model side of the kit: weights, models, train, export, evaluate, shift, score, leaderboard."""
__version__ = "0.2.0"
