"""Routing learners: the specialisation learner (per replica × tool EMA) and predictions → weights."""
