"""Benchmarks: `python -m fer_hf.bench {data,train,predict,faces,video}`; each prints its headline as the last line."""

BENCHMARKS = ("data", "train", "predict", "faces", "video")
