"""Benchmarks: `python -m fer_hf.bench {data,train,predict,faces,video,scale}`; each prints its headline last."""

BENCHMARKS = ("data", "train", "predict", "faces", "video", "scale")


def bench_parser(name: str, doc: str):
    """The parser of `python -m fer_hf.bench NAME`: the module docstring's first paragraph as description, its
    paragraphs from the third on (how it measures) as the epilog, kept as written."""
    import argparse

    return argparse.ArgumentParser(
        prog=f"python -m fer_hf.bench {name}",
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
