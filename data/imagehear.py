"""ImageHear: images sorted into one folder per class, for image-to-audio evaluation; image only, all test.

    python prepare.py imagehear --src DIR   # DIR/<class>/*.jpg|jpeg|png

Every image is read as RGB (grayscale, palette and alpha images too) and made --image_size square (shorter
side, then center crop); `label` and `sources` index the sorted class folders; captions are
"a photo of a <class>" (underscores read as spaces). Unreadable images are reported one line each and skipped.
Reference: Sheffer & Adi 2023, I Hear Your True Colors: Image Guided Audio Generation (the ImageHear set).
"""
import os

import numpy as np
from tqdm import tqdm

from encoders import MediaError, WordTokenizer, load_image

IMAGE_EXTS = ('.jpg', '.jpeg', '.png')


def caption(name):
    """An ImageHear class folder name -> its caption ('a photo of a ...')."""
    return f"a photo of a {name.replace('_', ' ')}"


def read(args):
    """Every readable image of every class folder, as the test split -> dict(splits, schema, meta, skipped)."""
    if not args.src or not os.path.isdir(args.src):
        raise FileNotFoundError(f"imagehear: --src {args.src} is not a folder of class folders <class>/*.jpg|png")
    classes = sorted(d for d in os.listdir(args.src) if os.path.isdir(os.path.join(args.src, d)) and d[0] != '.')
    files = [(k, os.path.join(c, f)) for k, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(args.src, c))) if f.lower().endswith(IMAGE_EXTS)]
    samples, skipped = [], []
    for k, name in tqdm(files, desc='imagehear'):
        try:
            image = load_image(os.path.join(args.src, name), args.image_size)   # (S, S, 3)
        except MediaError as e:
            skipped.append(str(e))
            continue
        samples.append(dict(image=image, label=k, sources=np.eye(len(classes), dtype=np.uint8)[k],
                            caption=dict(caption=caption(classes[k])), file=name))
    s = args.image_size
    schema = dict(image=((s, s, 3), 'uint8'), label=((), 'int64'), sources=((len(classes),), 'uint8'))
    meta = dict(vocab=WordTokenizer.vocabulary(map(caption, classes)), classes=dict(sources=classes, label=classes),
                src=os.path.abspath(args.src))
    return dict(splits={'test': samples}, schema=schema, meta=meta, skipped=skipped)
