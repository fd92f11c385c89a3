"""Input data: the one image reader and letterbox (``images``), which images a stage reads
(``selection``), data yamls and YOLO labels (``labels``), the bundled shapes data set
(``shapes``)."""
