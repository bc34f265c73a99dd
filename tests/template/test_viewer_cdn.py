"""The optional CloudFront distribution in front of GET /rooms/{channelId} (ViewerCdn).

Off by default, everything CloudFront under one condition, and both deployed shapes (on and off)
pass cfn-lint and the SAM transform on their own. The cache follows room-status's Cache-Control
(read from the Rust source, so the two can't drift apart) and keys on the `viewer_token` query
string alone.
"""

from __future__ import annotations

import json
import re

import pytest

from cfn_model import (
    PSEUDO_PARAMETERS,
    REPO,
    getatt_target,
    load_template,
    references,
    render,
    resources_of_type,
    sam_transform,
)

CONDITION = "HasViewerCdn"
API_HOST = "${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture(scope="module", params=[True, False], ids=["cdn-on", "cdn-off"])
def rendered(request, template) -> tuple[bool, dict]:
    return request.param, render(template, {CONDITION: request.param})


def _viewer_source() -> str:
    return (REPO / "shared/app/src/handlers/viewer.rs").read_text()


def _public_max_age() -> int:
    """max-age of room-status's public answer, from the code."""
    m = re.search(r'pub const PUBLIC_CACHE_CONTROL: &str = "([^"]*)";', _viewer_source())
    assert m, "PUBLIC_CACHE_CONTROL moved: point this test at it"
    header = m.group(1)
    assert "public" in header.split(", ")
    (max_age,) = re.findall(r"(?:^|, )max-age=(\d+)", header)
    return int(max_age)


def test_the_token_answer_is_never_stored():
    m = re.search(r'pub const PRIVATE_CACHE_CONTROL: &str = "([^"]*)";', _viewer_source())
    assert m and "no-store" in m.group(1) and "private" in m.group(1)


def test_off_by_default(template):
    p = template["Parameters"]["ViewerCdn"]
    assert (p["Type"], p["Default"], p["AllowedValues"]) == ("String", "false", ["true", "false"])
    assert template["Conditions"][CONDITION] == {"Fn::Equals": [{"Ref": "ViewerCdn"}, "true"]}


def _conditional(template) -> dict[str, str]:
    return {name: r["Condition"] for name, r in template["Resources"].items() if "Condition" in r}


def test_everything_cloudfront_is_under_the_condition(template):
    cloudfront = {n for n, r in template["Resources"].items() if r["Type"].startswith("AWS::CloudFront::")}
    assert cloudfront == {"ViewerCachePolicy", "ViewerDistribution"}
    conditional = _conditional(template)
    assert {n for n, c in conditional.items() if c == CONDITION} == cloudfront
    # Whatever refers to a conditional resource carries the same condition (or it would dangle
    # when the condition is false).
    for section in ("Resources", "Outputs"):
        for name, item in template.get(section, {}).items():
            for _, target, path in references(item):
                if target in conditional:
                    assert item.get("Condition") == conditional[target], (section, name, target, path)
    cdn_outputs = {n for n, o in template["Outputs"].items() if o.get("Condition") == CONDITION}
    assert cdn_outputs == {"ViewerCdnDomain", "ViewerRoomStatusUrl"}


def test_the_cache_follows_the_origin_and_keys_on_the_viewer_token_only(template):
    cfg = template["Resources"]["ViewerCachePolicy"]["Properties"]["CachePolicyConfig"]
    # The origin's Cache-Control decides: max-age=2 for the public answer, no-store for a token's.
    # No Cache-Control (API Gateway's own errors): not cached. Never beyond a few seconds.
    assert (cfg["MinTTL"], cfg["DefaultTTL"]) == (0, 0)
    assert _public_max_age() <= cfg["MaxTTL"] <= 10
    key = cfg["ParametersInCacheKeyAndForwardedToOrigin"]
    assert key["QueryStringsConfig"] == {"QueryStringBehavior": "whitelist", "QueryStrings": ["viewer_token"]}
    assert key["HeadersConfig"] == {"HeaderBehavior": "none"}
    assert key["CookiesConfig"] == {"CookieBehavior": "none"}
    assert key["EnableAcceptEncodingGzip"] is True and key["EnableAcceptEncodingBrotli"] is True
    # The query string the key holds is the one room-status reads.
    main = (REPO / "functions/room-status/src/main.rs").read_text()
    assert 'query_string_parameters.first("viewer_token")' in main


def _distribution(template) -> dict:
    return template["Resources"]["ViewerDistribution"]["Properties"]["DistributionConfig"]


def test_the_origin_is_the_http_api_over_https(template):
    origins = {o["Id"]: o for o in _distribution(template)["Origins"]}
    assert set(origins) == {"room-status", "not-routed"}
    for o in origins.values():
        assert o["DomainName"] == {"Fn::Sub": API_HOST}
        assert o["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
        assert o["CustomOriginConfig"]["OriginSSLProtocols"] == ["TLSv1.2"]
    assert "OriginPath" not in origins["room-status"]
    # The not-routed origin's prefix is one no route of the API starts with: API Gateway 404s.
    prefix = origins["not-routed"]["OriginPath"]
    routes = [r["Properties"]["RouteKey"] for r in resources_of_type(template, "AWS::ApiGatewayV2::Route").values()]
    for key in routes:
        path = (key["Fn::Sub"] if isinstance(key, dict) else key).split(" ", 1)[1]
        assert not path.startswith(prefix), key


def test_only_get_rooms_channel_reaches_room_status(template):
    d = _distribution(template)
    cache_policy = {"Ref": "ViewerCachePolicy"}
    behaviors = [(b["PathPattern"], b) for b in d["CacheBehaviors"]]
    # Behaviors match in order: the deeper /rooms/{id}/... routes (the backend's signed ones) are
    # caught before /rooms/*, which would match them too.
    assert [p for p, _ in behaviors] == ["/rooms/*/*", "/rooms/*"]
    targets = {p: b["TargetOriginId"] for p, b in behaviors}
    assert targets == {"/rooms/*/*": "not-routed", "/rooms/*": "room-status"}
    assert d["DefaultCacheBehavior"]["TargetOriginId"] == "not-routed"
    for b in [d["DefaultCacheBehavior"]] + [b for _, b in behaviors]:
        assert b["ViewerProtocolPolicy"] == "https-only"
        # Read-only: GET and HEAD (the API has no CORS configuration, so no OPTIONS).
        assert b["AllowedMethods"] == b["CachedMethods"] == ["GET", "HEAD"]
        assert b["CachePolicyId"] == cache_policy
        assert b["Compress"] is True
        # No origin request policy: CloudFront sends the origin's own Host (API Gateway needs it)
        # and only what the cache key holds.
        assert "OriginRequestPolicyId" not in b and "ForwardedValues" not in b
    # The API has no CORS configuration (if it gets one, allow OPTIONS and key on Origin).
    assert "CorsConfiguration" not in template["Resources"]["HttpApi"]["Properties"]


def test_errors_are_cached_no_longer_than_the_answer(template):
    errors = {e["ErrorCode"]: e["ErrorCachingMinTTL"] for e in _distribution(template)["CustomErrorResponses"]}
    # room-status never answers 404 to a GET: a 404 (a HEAD, a stray path) must not hide a room.
    assert errors[404] == 0
    # CloudFront would keep a 5xx 10 s (ignoring no-store); as long as the public answer instead.
    for code in (500, 502, 503, 504):
        assert errors[code] == _public_max_age(), code
    assert not any("ResponseCode" in e or "ResponsePagePath" in e for e in _distribution(template)["CustomErrorResponses"])


def test_outputs_name_the_distribution(template):
    out = template["Outputs"]
    assert getatt_target(out["ViewerCdnDomain"]["Value"]) == "ViewerDistribution"
    assert out["ViewerRoomStatusUrl"]["Value"] == {"Fn::Sub": "https://${ViewerDistribution.DomainName}/rooms/{channelId}"}


# --- both deployed shapes --------------------------------------------------------------------------


def test_rendering_keeps_or_drops_exactly_the_cdn(template, rendered):
    on, tpl = rendered
    cdn = {"ViewerCachePolicy", "ViewerDistribution"}
    assert (cdn <= set(tpl["Resources"])) is on and (not cdn & set(tpl["Resources"])) is (not on)
    assert ("ViewerCdnDomain" in tpl["Outputs"]) is on
    assert all("Condition" not in r or r["Condition"] != CONDITION for r in tpl["Resources"].values())
    # Everything else is untouched.
    assert set(template["Resources"]) - cdn == set(tpl["Resources"]) - cdn


def test_each_rendering_passes_cfn_lint(rendered):
    """cfn-lint (as `cfn-lint template.yaml` and `sam validate --lint` run it) on the template as
    deployed with the distribution on, and with it off: no error, no warning."""
    from cfnlint.api import lint

    _, tpl = rendered
    matches = lint(json.dumps(tpl))
    assert not matches, "\n".join(str(m) for m in matches)


def test_each_rendering_transforms_and_every_reference_resolves(rendered):
    _, tpl = rendered
    deployed = sam_transform(tpl)
    for which in (tpl, deployed):
        known = set(which.get("Parameters", {})) | set(which["Resources"]) | PSEUDO_PARAMETERS
        dangling = [
            f"{kind} {target} at {'/'.join(map(str, path))}"
            for section in ("Globals", "Resources", "Outputs", "Rules", "Conditions")
            for kind, target, path in references(which.get(section, {}))
            if target not in known
        ]
        assert not dangling, "\n".join(dangling)
