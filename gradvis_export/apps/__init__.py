"""Applications on top of the library: the `gradvis` command line (`cli`), the video job
(`video`), many videos at once (`batch`), Triton repositories (`triton`), Grad-ECLIP on video
(`clip`, `clip_video`), video models by name (`models`), the car-light data set and its
training (`datasets`, `train`, `depthwise`), the demo and the seed interface (`legacy`).
Library code below this layer never sees an argparse Namespace."""
