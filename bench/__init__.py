"""`make bench`: the portal's speed targets, measured against baselines in the same run."""
