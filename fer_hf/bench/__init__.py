"""Benchmarks: `python -m fer_hf.bench {data,train,predict,faces,video,scale,app}`; each prints its headline last."""

BENCHMARKS = ("data", "train", "predict", "faces", "video", "scale", "app")


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


def at_least(minimum: float, kind: type = int, unit: str = ""):
    """argparse type: a number of `kind` >= `minimum`, refused with a sentence (exit 2): a benchmark of 0 steps or a
    0-second clip would time nothing and print a throughput of nothing."""
    import argparse

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value != value or value < minimum:  # value != value: nan
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what} of at least {minimum}{unit}, got {text!r}")
        return value

    return parse
