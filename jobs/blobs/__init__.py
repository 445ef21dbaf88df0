"""Objects in S3: seed sets, datasets with their manifests, and the archived decision logs."""
