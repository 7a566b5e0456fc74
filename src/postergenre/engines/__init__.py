"""Engines: where posters become model outputs, batch by batch.

- `local`: decoding processes (or the decode cache) here, the model in this process;
- `ray`: Ray Data actors that decode their posters and hold the model, on a cluster or here
  (`ray_cluster`: the engine check, the Ray session and the actor plan);
- `decoding`: the decoding pipeline both share.

Inference (`Predictor`, the similarity index) and training (the embedding step) use them; an
engine knows nothing of either, it runs the model it is given.
"""
