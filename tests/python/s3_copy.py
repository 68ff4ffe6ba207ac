"""Copies a folder to an S3 prefix or back, with boto3 and the test server's credentials.

usage: s3_copy.py ENDPOINT up LOCAL BUCKET/PREFIX [public-read]
       s3_copy.py ENDPOINT down BUCKET/PREFIX LOCAL

`public-read` uploads objects anyone may read (the server refuses anonymous reads of
others), as in a public bucket.
"""
import os
import sys

import boto3

endpoint, direction, src, dst = sys.argv[1:5]
extra = {"ACL": sys.argv[5]} if len(sys.argv) > 5 else None
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
if direction == "up":
    bucket, _, prefix = dst.partition("/")
    for folder, _, files in os.walk(src):
        for name in files:
            path = os.path.join(folder, name)
            key = os.path.join(prefix, os.path.relpath(path, src)).lstrip("/")
            s3.upload_file(path, bucket, key, ExtraArgs=extra)
else:
    bucket, _, prefix = src.partition("/")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            path = os.path.join(dst, os.path.relpath(obj["Key"], prefix))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, obj["Key"], path)
