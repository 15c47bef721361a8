"""The recommender's write services, one module per family (import from the module).

- ``runs``: the ``TrainingRun`` life cycle: start (the overlap lock), heartbeat,
  failure and success, the run's data as of its start.
- ``stages``: the model-training stages: features, embeddings, ranking.
- ``indexes``: FAISS indexes: the run's index stage, ``rebuild_index`` and the run's
  last stage, the serving index refresh.
- ``promotion``: the gate of a new ranking version against the active one and the
  auto-promotion policy.
- ``evaluation``: the evaluation stage (offline strategy comparison, promotion).
- ``pipeline``: every stage in order, in this process (``manage.py train_models``).
- ``recommendations``: a member's recommendations and their impressions.

Every training stage:

1. checks that its run is still running and beats the heartbeat (a daemon thread
   keeps beating while the stage computes, so only a dead process goes stale);
2. returns what it produced earlier if it already ran for this run (tasks are
   retried and redelivered: a stage must be idempotent);
3. computes with ``recommender.ml`` (no transaction open), writes artifact files
   atomically (``registry.artifacts.artifact_save``);
4. registers everything in ONE transaction as its last step, after locking the run
   row and re-checking that it is still running and the stage still undone. A crash
   before or during that transaction registers nothing; at worst an unreferenced
   file is left behind, deleted right away when the failure is an exception.

The stages load their data as of the run's start (``started_at``), so the stages of
one run, run by different workers at different times, see the same data. The last
one, ``serving_index``, is the exception: it rebuilds the index of the embedding
version serving at the end of the run from the members as they are then, as
``rebuild_index`` does, and finishes the run.
"""
