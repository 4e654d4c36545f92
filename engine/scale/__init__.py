"""Scaling out: one worker per device of a box (`devices`), an eval job split into item
ranges that several workers produce at once (`shards`), and a Ray driver that runs jobs on a
cluster while it alone writes the store (`ray_driver`). Kept free of torch at import."""
