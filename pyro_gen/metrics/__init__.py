"""Metrics of what a model learned: topic coherence, perplexity and topic recovery (:mod:`.topics`)."""

from . import topics
from .topics import npmi, perplexity, topic_recovery, top_words

__all__ = ["topics", "npmi", "perplexity", "topic_recovery", "top_words"]
