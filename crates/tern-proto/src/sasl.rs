//! SASL PLAIN (RFC 4616) and LOGIN decoding, shared by POP3 AUTH (RFC 5034).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Credentials extracted from a SASL exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication identity (the user name).
    pub username: String,
    /// The password.
    pub password: String,
}

/// Why a SASL exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent "*".
    Cancelled,
    /// Not valid base64 or not the expected structure.
    Malformed(&'static str),
    /// An authorization identity different from the authentication identity (proxy login is not
    /// offered).
    AuthzidMismatch,
    /// A user name with a control character: no account has one, and it could forge log lines.
    ControlInIdentity,
}

/// Checks a user name a client sent (USER, SASL PLAIN authcid, SASL LOGIN user name): no
/// control characters (CR, LF, NUL, ESC, DEL and the C1 range).
pub fn check_identity(name: &str) -> Result<(), SaslError> {
    if name.chars().any(char::is_control) {
        return Err(SaslError::ControlInIdentity);
    }
    Ok(())
}

/// Decodes a SASL LOGIN user name response.
pub fn login_username(line: &[u8]) -> Result<String, SaslError> {
    let name = utf8(&decode_response(line)?)?;
    check_identity(&name)?;
    Ok(name)
}

/// Decodes one base64 client response. "=" is the empty response (RFC 5034 section 4).
pub fn decode_response(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let line = trim_ascii(line);
    if line == b"*" {
        return Err(SaslError::Cancelled);
    }
    if line == b"=" {
        return Ok(Vec::new());
    }
    STANDARD
        .decode(line)
        .map_err(|_| SaslError::Malformed("invalid base64"))
}

/// Parses the PLAIN message `[authzid] NUL authcid NUL passwd`.
pub fn parse_plain(msg: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed(
            "PLAIN expects authzid NUL authcid NUL password",
        ));
    };
    let username = utf8(authcid)?;
    if !authzid.is_empty() && authzid != authcid {
        return Err(SaslError::AuthzidMismatch);
    }
    if username.is_empty() {
        return Err(SaslError::Malformed("empty user name"));
    }
    check_identity(&username)?;
    Ok(Credentials {
        username,
        password: utf8(passwd)?,
    })
}

/// The octets as UTF-8, or a malformed-response error.
pub fn utf8(bytes: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Malformed("not UTF-8"))
}

/// Base64 (standard alphabet, padded), as SASL challenges are sent.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_variants() {
        let c = parse_plain(b"\0alice@x\0pw").unwrap();
        assert_eq!(c.username, "alice@x");
        assert_eq!(c.password, "pw");
        assert!(parse_plain(b"alice@x\0alice@x\0pw").is_ok());
        assert_eq!(
            parse_plain(b"bob\0alice@x\0pw"),
            Err(SaslError::AuthzidMismatch)
        );
        assert!(parse_plain(b"alice\0pw").is_err());
        assert!(parse_plain(b"\0a\0b\0c").is_err());
    }

    #[test]
    fn responses() {
        assert_eq!(decode_response(b"*"), Err(SaslError::Cancelled));
        assert_eq!(decode_response(b"="), Ok(vec![]));
        assert_eq!(decode_response(b"YQ=="), Ok(b"a".to_vec()));
        assert!(decode_response(b"!!!").is_err());
    }
}
