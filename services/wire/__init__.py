"""What crosses process boundaries, shared by the services, the gateway and the jobs worker:
request and response schemas, upstream URL rules, S3 locations and per-key scopes."""
