#!/usr/bin/env python3
"""moto-s3.py - moto's S3 on a loopback port with SigV4 checking switched on.

Starts moto's server in this process (port 0: any free port), creates an IAM user with
an access key and an S3 policy, creates a bucket, then turns authentication on so that
every later request must carry a valid SigV4 signature from that key. Prints

    READY http://127.0.0.1:PORT ACCESS_KEY SECRET_KEY BUCKET

and serves until stdin closes. Exits 77 (after printing "SKIP reason") when moto or
boto3 are not importable.
"""
import json
import os
import sys
import urllib.request

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# Parts below 5 MiB are refused at Complete, as on AWS.
os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", str(5 * 1024 * 1024))

try:
    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer
except ImportError as e:  # pragma: no cover
    print(f"SKIP {e}", flush=True)
    sys.exit(77)

BUCKET = "media-test"


def main():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://127.0.0.1:{port}"
    boot = dict(endpoint_url=endpoint, region_name="us-east-1",
                aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam = boto3.client("iam", **boot)
    iam.create_user(UserName="media")
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    arn = iam.create_policy(PolicyName="media-s3",
                            PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
    iam.attach_user_policy(UserName="media", PolicyArn=arn)
    key = iam.create_access_key(UserName="media")["AccessKey"]
    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **boot)
    s3.create_bucket(Bucket=BUCKET)
    # From here on every request is authenticated (0 more anonymous actions).
    req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0",
                                 headers={"Content-Type": "text/plain"}, method="POST")
    urllib.request.urlopen(req).read()
    print(f"READY {endpoint} {key['AccessKeyId']} {key['SecretAccessKey']} {BUCKET}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
