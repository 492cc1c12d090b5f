"""ImageHear: images sorted into one folder per class, for image-to-audio evaluation; all test.

    python prepare.py imagehear            # data/raw/imagehear/<class>/*.jpg|jpeg|png
    python prepare.py imagehear --src DIR  # DIR/<class>/*.jpg|jpeg|png

The images are ImageHear's (https://pages.cs.huji.ac.il/adiyoss-lab/im2wav/), one folder per class.
Every image is read as RGB (grayscale, palette and alpha images too) and made --image_size square
(shorter side, then center crop); `label` and `sources` index the sorted class folders that hold an
image read; captions are "a photo of a <class>" (underscores read as spaces). Unreadable images are
reported one line each and skipped.
Reference: Sheffer & Adi 2023, I Hear Your True Colors: Image Guided Audio Generation.
"""
import os

import numpy as np
from tqdm import tqdm

from encoders import MediaError, WordTokenizer, load_image

RAW = os.path.join('raw', 'imagehear')      # the default --src, under --data_dir
PAGE = 'https://pages.cs.huji.ac.il/adiyoss-lab/im2wav/'
IMAGE_EXTS = ('.jpg', '.jpeg', '.png')
OPTIONS = {}


def caption(name):
    """An ImageHear class folder name -> its caption ('a photo of a ...')."""
    return f"a photo of a {name.replace('_', ' ')}"


def read(src, *, data_dir, image_size):
    """Every readable image of every class folder, as the test split -> dict(splits, ...)."""
    src = src or os.path.join(data_dir, RAW)
    layout = f"ImageHear ({PAGE}) is read from one folder per class, {src}/<class>/*.jpg|jpeg|png"
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: not found; {layout}; pass --src DIR for another folder")
    folders = sorted(d for d in os.listdir(src)
                     if os.path.isdir(os.path.join(src, d)) and d[0] != '.')
    files = [(c, os.path.join(c, f)) for c in folders
             for f in sorted(os.listdir(os.path.join(src, c))) if f.lower().endswith(IMAGE_EXTS)]
    images = []
    skipped = []
    for c, name in tqdm(files, desc='imagehear'):
        try:
            image = load_image(os.path.join(src, name), image_size)                 # (S, S, 3)
            images.append((c, name, image))
        except MediaError as e:
            skipped.append(str(e))
    if not images:
        n_files = sum(len(names) for _, _, names in os.walk(src))
        raise ValueError(f"{src}: no readable image among its {n_files} files ({len(folders)} "
                         f"class folders, {len(files)} files named *.jpg|jpeg|png in them); "
                         f"{layout}")
    classes = sorted({c for c, _, _ in images})                     # folders with an image read
    samples = []
    for c, name, image in images:
        k = classes.index(c)
        samples.append(dict(image=image, label=k, sources=np.eye(len(classes), dtype=np.uint8)[k],
                            caption=dict(caption=caption(c)), file=name))
    s = image_size
    schema = dict(image=((s, s, 3), 'uint8'), label=((), 'int64'),
                  sources=((len(classes),), 'uint8'))
    meta = dict(vocab=WordTokenizer.vocabulary(map(caption, classes)),
                classes=dict(sources=classes, label=classes), src=os.path.abspath(src))
    return dict(splits={'test': samples}, schema=schema, meta=meta, skipped=skipped)
