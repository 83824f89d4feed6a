"""Evaluation and covariate shift: an export or a predictions file, and labelled photos, in;
figures out.

Takes an export or a predictions file (`hackathon.deploy`) and a truth (a labelme folder or a
`.rec`, read by `truth`). Gives the metrics (`metrics`: VOC07, VOC area, COCO, bootstrap), the eval
results and their report files (`evaluation`), photo features from the pretrained backbone
(`features`), how far a test scene is from the training photos (`shift`, with its report in
`shift_report`), and an export adapted to that scene from unlabelled photos of it (`adapt`: a new
export folder).
"""
