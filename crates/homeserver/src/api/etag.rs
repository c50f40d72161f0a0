//! `ETag` / `If-Match` for resources with a revision counter (devices,
//! profiles): the tag is the revision in quotes, compared strongly.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

/// The `ETag` of a revision.
pub(crate) fn revision_tag(revision: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Sets the `ETag` of `revision` on a response.
pub(crate) fn with_tag(mut response: Response, revision: u64) -> Response {
    response.headers_mut().insert(header::ETAG, revision_tag(revision));
    response
}

/// The revision `If-Match` pins: `None` without the header or with `*`;
/// a tag that is not one of ours (weak, malformed, another list) pins
/// revision 0, which no resource has, so the write answers 412 once the
/// resource is known to exist.
pub(crate) fn if_match(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::IF_MATCH)?;
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return None;
    }
    let pinned = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).and_then(|t| t.parse::<u64>().ok());
    Some(pinned.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn if_match_reads_our_tags_and_pins_nothing_for_star() {
        assert_eq!(if_match(&HeaderMap::new()), None);
        assert_eq!(if_match(&headers("*")), None);
        assert_eq!(if_match(&headers("\"7\"")), Some(7));
        assert_eq!(if_match(&headers(revision_tag(42).to_str().unwrap())), Some(42));
        for foreign in ["W/\"7\"", "7", "\"x\"", "\"7\", \"8\""] {
            assert_eq!(if_match(&headers(foreign)), Some(0), "{foreign}");
        }
    }
}
