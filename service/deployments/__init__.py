"""Ray Serve deployments behind the ingress: the model replicas (and how the ingress calls
them) and the one job runner replica."""
