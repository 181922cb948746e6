//! AWS Signature Version 4 for S3: turns a request's method, path, query, headers and payload hash
//! into the `Authorization` header value. Pure functions, so the tests below can check them
//! against AWS's published examples rather than only against a (possibly lenient) server.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The payload hash S3 accepts for bodies streamed from disk, which would otherwise have to be
/// read twice (once to hash, once to send). Transport integrity is left to TLS and S3's ETags.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "s3";

/// What the signature covers. `path` and the query pairs must already be URI-encoded with
/// [`uri_encode`], exactly as they are sent: S3 signs the encoded form it receives.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    /// Every header to sign (at least `host`, `x-amz-date` and `x-amz-content-sha256`).
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_hash: &'a str,
}

/// `20130524T000000Z`, the form of both the `x-amz-date` header and the signature's timestamp.
pub fn amz_date(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The `Authorization` header value for `req`, sent at `amz_date` (as produced by [`amz_date`]).
pub fn authorization(
    access_key: &str,
    secret_key: &str,
    region: &str,
    amz_date: &str,
    req: &Request<'_>,
) -> String {
    let day = &amz_date[..8];
    let scope = format!("{day}/{region}/{SERVICE}/aws4_request");
    let (canonical, signed_headers) = canonical_request(req);
    let string_to_sign = format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", sha256_hex(canonical.as_bytes()));
    let key = signing_key(secret_key, day, region);
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    format!(
        "{ALGORITHM} Credential={access_key}/{scope},SignedHeaders={signed_headers},Signature={signature}"
    )
}

/// Returns the canonical request and the `;`-joined list of signed header names.
fn canonical_request(req: &Request<'_>) -> (String, String) {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), collapse_spaces(value.trim())))
        .collect();
    headers.sort();
    let signed = headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        req.method,
        req.path,
        canonical_query(req.query),
        req.payload_hash
    );
    (canonical, signed)
}

/// Pairs sorted by (encoded) name then value and joined as `a=1&b=`; a valueless parameter such
/// as `?uploads` is signed as `uploads=`.
pub fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = pairs.iter().collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// SigV4's URI encoding: every byte but `A-Za-z0-9-_.~` as `%XX` (upper-case hex), and `/` kept
/// only when it separates path segments.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn signing_key(secret_key: &str, day: &str, region: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret_key}").as_bytes(), day.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, SERVICE.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    //! The examples from AWS's "Signature Calculations for the Authorization Header: Transferring
    //! Payload in a Single Chunk" page (S3 API reference), which fix the key, the time and the
    //! expected signatures.

    use super::*;

    const ACCESS: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20130524T000000Z";
    const HOST: &str = "examplebucket.s3.amazonaws.com";
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn sign(
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
        payload: &str,
    ) -> String {
        let query: Vec<(String, String)> =
            query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut headers = vec![("Host", HOST), ("x-amz-date", DATE), ("x-amz-content-sha256", payload)];
        headers.extend_from_slice(extra);
        let req = Request { method, path, query: &query, headers: &headers, payload_hash: payload };
        authorization(ACCESS, SECRET, "us-east-1", DATE, &req)
    }

    #[test]
    fn get_object_matches_the_aws_example() {
        let auth = sign("GET", "/test.txt", &[], &[("Range", "bytes=0-9")], EMPTY);
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn put_object_with_an_encoded_key_matches_the_aws_example() {
        let body = sha256_hex(b"Welcome to Amazon S3.");
        assert_eq!(body, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
        let path = format!("/{}", uri_encode("test$file.text", true));
        assert_eq!(path, "/test%24file.text");
        let extra =
            [("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")];
        let auth = sign("PUT", &path, &[], &extra, &body);
        assert!(
            auth.ends_with(
                "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,\
                 Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
            ),
            "{auth}"
        );
    }

    #[test]
    fn query_parameters_are_sorted_and_valueless_ones_signed_with_an_equals_sign() {
        let auth = sign("GET", "/", &[("prefix", "J"), ("max-keys", "2")], &[], EMPTY);
        assert!(
            auth.ends_with("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
            "{auth}"
        );
        let auth = sign("GET", "/", &[("lifecycle", "")], &[], EMPTY);
        assert!(
            auth.ends_with("Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
            "{auth}"
        );
    }

    #[test]
    fn amz_date_is_the_compact_utc_form() {
        let at = time::macros::datetime!(2013-05-24 02:00:07 +02:00);
        assert_eq!(amz_date(at), "20130524T000007Z");
    }

    #[test]
    fn uri_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(uri_encode("a b/c+d=é~_-.", true), "a%20b/c%2Bd%3D%C3%A9~_-.");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }
}
