"""What every stage of the evening shares, defined once.

Takes nothing from the other packages (no stage is imported here). Gives: `KitError`, the one
exception for mistakes a user can fix (`errors`); atomic writes, file locks and display paths
(`fileutil`).
"""
