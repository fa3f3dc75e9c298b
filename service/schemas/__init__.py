"""HTTP request and response models, by resource. Limits are declared on the fields, so a
request over a limit is refused at the edge with a 422 naming the field, before any work."""
