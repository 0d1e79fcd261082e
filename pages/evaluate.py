"""Evaluate: a model's test-set evaluation and what each of its filters responds to (pages/_views/evaluate.py)."""
from pages._views import evaluate

evaluate.render()
