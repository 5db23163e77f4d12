use actix_web::test::TestRequest;

use super::*;

#[test]
fn only_requests_of_this_origin_or_of_no_page_pass() {
    let ours = |origin: Option<&str>, site: Option<&str>| {
        let mut req = TestRequest::default().insert_header((header::HOST, "127.0.0.1:9000"));
        if let Some(origin) = origin {
            req = req.insert_header((header::ORIGIN, origin));
        }
        if let Some(site) = site {
            req = req.insert_header(("sec-fetch-site", site));
        }
        same_origin(&req.to_http_request())
    };
    assert!(ours(None, None), "curl");
    assert!(ours(Some("http://127.0.0.1:9000"), Some("same-origin")));
    assert!(
        ours(Some("https://127.0.0.1:9000"), None),
        "behind a TLS proxy"
    );
    assert!(!ours(Some("http://127.0.0.1:9001"), None), "another port");
    assert!(!ours(Some("http://evil.example"), None));
    assert!(!ours(Some("null"), None));
    assert!(!ours(None, Some("cross-site")));
    assert!(!ours(Some("http://127.0.0.1:9000"), Some("same-site")));
}

#[test]
fn the_session_cookie_is_found_among_others() {
    let req = TestRequest::default()
        .insert_header((header::COOKIE, "a=1; herald_admin=abc.def; b=2"))
        .to_http_request();
    assert_eq!(cookie_value(&req).as_deref(), Some("abc.def"));
    let none = TestRequest::default()
        .insert_header((header::COOKIE, "herald_adminx=1"))
        .to_http_request();
    assert_eq!(cookie_value(&none), None);
}

#[test]
fn json_is_required_by_content_type() {
    let with = |ct: &str| {
        is_json(
            &TestRequest::default()
                .insert_header((header::CONTENT_TYPE, ct))
                .to_http_request(),
        )
    };
    assert!(with("application/json"));
    assert!(with("application/json; charset=utf-8"));
    // What a cross-site HTML form can send.
    assert!(!with("text/plain"));
    assert!(!with("application/x-www-form-urlencoded"));
    assert!(!with("multipart/form-data; boundary=x"));
}
