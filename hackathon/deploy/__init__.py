"""Deployment: a run folder in, an exported model and its predictions out.

Takes a run folder (`hackathon.train.rundir`). Gives the export (`export`: the export contract,
its file names, schema and validator, and the writer), detections on photos (`predict`), and the
predictions file every later stage reads (`predictions`: its schema, reader and writer).
"""
