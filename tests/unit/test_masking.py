"""Credentials never leave the process: URLs, query strings, DSNs and messages that hold them."""
import doctest

import pipeline.masking
from pipeline.masking import mask_secrets, mask_url


def test_credentials_are_masked_in_urls_query_strings_dsns_and_messages():
    assert mask_url("rtsp://admin:s3cret@10.0.0.5:554/live?channel=1") == "rtsp://***@10.0.0.5:554/live?channel=1"
    assert mask_url("rtsp://admin:p@ss/w@10.0.0.5/live") == "rtsp://***@10.0.0.5/live"
    assert mask_url("https://cam/x?token=abc&fps=5") == "https://cam/x?token=***&fps=5"
    assert mask_url("http://cam/video.cgi?user=a&PWD=x%26y&resolution=vga") == "http://cam/video.cgi?user=a&PWD=***&resolution=vga"
    assert mask_url("host=db user=sw password='p w'") == "host=db user=sw password=***"
    assert mask_url("cannot open rtsp://u:pw@cam/1 (timeout); retrying") == "cannot open rtsp://***@cam/1 (timeout); retrying"
    assert mask_url("/videos/a.mp4") == "/videos/a.mp4" and mask_url("http://cam/?keyframe=1") == "http://cam/?keyframe=1"
    assert mask_url(None) is None
    # a key that ends in a secret word, as cloud cameras and hooks name them
    assert mask_url("rtsp://cam/live?access_token=abc&channel=1") == "rtsp://cam/live?access_token=***&channel=1"
    assert mask_url("https://h/x?client_secret=s&X-Api-Key=k") == "https://h/x?client_secret=***&X-Api-Key=***"
    assert mask_url("http://cam/?monkey=1&turnkey=2") == "http://cam/?monkey=1&turnkey=2"
    assert mask_url("http://h/s.m3u8?accessToken=a&sessionKey=b&keyframe=1") == \
        "http://h/s.m3u8?accessToken=***&sessionKey=***&keyframe=1"
    assert mask_url("http://h/?x-accessToken=a&oauth.clientSecret=b") == "http://h/?x-accessToken=***&oauth.clientSecret=***"


def test_secret_looking_keys_are_masked_at_any_depth_and_other_keys_kept():
    sink = {"type": "kafka", "password": "p", "sasl": {"clientSecret": "s", "mechanism": "PLAIN"}, "keyframes": 2,
            "brokers": ["kafka://u:pw@b1:9092"], "x-api-key": 7, "tls": {"verify_signature": True}, "token": None}
    assert mask_secrets({"sinks": [sink], "monkey": "m"}) == {"sinks": [
        {"type": "kafka", "password": "***", "sasl": {"clientSecret": "***", "mechanism": "PLAIN"}, "keyframes": 2,
         "brokers": ["kafka://***@b1:9092"], "x-api-key": "***", "tls": {"verify_signature": True}, "token": None}],
        "monkey": "m"}
    under_a_secret = {"auth": {"user": "ops", "tokens": ["a", "b"]}}
    assert mask_secrets(under_a_secret) == {"auth": {"user": "***", "tokens": ["***", "***"]}}


def test_the_examples_in_the_module_hold():
    assert doctest.testmod(pipeline.masking).failed == 0
