"""The HTTP edge: the FastAPI app, its middleware and routes, and the Serve ingress that
hosts it. No business logic: a route validates, asks tenancy, and hands over."""
