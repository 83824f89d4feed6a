"""Training: a packed dataset in, a run folder out.

Takes the pack written by `labeling.pack` (train/val `.rec` + `.idx`, `classes.txt`,
`manifest.json`). Gives the run folder (`rundir`: `config.yaml`, `results.csv`, `curves.png`,
`best.params`, `last.params`). Inside: the pretrained ImageNet weights (`weights`), every detector
factory (`models`), augmentation (`augment`), records, batches and SSD targets (`data`), the loop
and its stop rules (`loop`), and mxnet's launcher fixed for Python 3.11 (`launch`, for
`dist_sync`).
"""
