"""A DVC remote set up as the README says verifies what it pulls: an object damaged in the store fails the pull."""

import hashlib

import boto3

from tests.conftest import AWS_ENV, CREDENTIALS
from tests.test_pipeline import commit, sh


def test_a_damaged_object_in_the_remote_fails_the_pull(s3_endpoint, tmp_path):
    """With `verify` set, a pull that receives other bytes than the checksum names fails with DVC's message and
    leaves the damaged file out of the workspace; without it, the same pull passes the damage on."""
    repo = tmp_path / "repo"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    (repo / "model.onnx").write_bytes(bytes(range(256)) * 400)
    sh("dvc", "add", "-q", "model.onnx", cwd=repo)
    sh("dvc", "remote", "add", "-d", "s3", "s3://quantlab/checked", cwd=repo)
    sh("dvc", "remote", "modify", "s3", "endpointurl", s3_endpoint, cwd=repo)
    sh("dvc", "remote", "modify", "s3", "verify", "true", cwd=repo)  # as the README's S3 setup commits it
    commit(repo, "a model and a verified remote")
    sh("dvc", "push", cwd=repo, **AWS_ENV)
    digest = hashlib.md5((repo / "model.onnx").read_bytes()).hexdigest()
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **CREDENTIALS)
    key = f"checked/files/md5/{digest[:2]}/{digest[2:]}"
    stored = s3.get_object(Bucket="quantlab", Key=key)["Body"].read()
    middle = len(stored) // 2
    s3.put_object(Bucket="quantlab", Key=key, Body=stored[:middle] + bytes(16) + stored[middle + 16 :])

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    result = sh("dvc", "pull", cwd=clone, check=False, **AWS_ENV)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "ERROR: failed to pull data from the cloud" in result.stderr and "model.onnx" in result.stderr
    assert not (clone / "model.onnx").exists()

    unchecked = tmp_path / "unchecked"  # the damage is real: without `verify` it reaches the workspace
    sh("git", "clone", "-q", str(repo), str(unchecked), cwd=tmp_path)
    sh("dvc", "remote", "modify", "--local", "s3", "verify", "false", cwd=unchecked)
    sh("dvc", "pull", cwd=unchecked, **AWS_ENV)
    assert hashlib.md5((unchecked / "model.onnx").read_bytes()).hexdigest() != digest
