"""One privacy report per training run (`card.write`, ``jaxpriv report WORKDIR``)."""
