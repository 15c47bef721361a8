"""Kindred's numeric core: a small library of numpy/FAISS/scikit-learn code.

Modules here take and return arrays and dataclasses, never ORM objects, and import
no Django; the Django side (``recommender/services/``, ``tasks.py``, ``serving/``,
``evaluation.py``, ``accounts/demo.py``) adapts them to the database.
"""
