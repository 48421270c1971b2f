"""Entry-point logic: training, evaluation, and the helpers they share."""
