/// A POP3 command as the client sent it; arguments are checked by the session, which knows the
/// state they are judged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name`.
    User(String),
    /// The rest of the line: passwords may contain spaces (RFC 1939 section 7).
    Pass(String),
    /// `APOP` (not offered; refused).
    Apop,
    /// `AUTH [mechanism [initial-response]]` (RFC 5034).
    Auth {
        /// The SASL mechanism, upper-cased; `None` lists the mechanisms.
        mechanism: Option<String>,
        /// The initial response, still base64-encoded.
        initial_response: Option<Vec<u8>>,
    },
    /// `STAT`.
    Stat,
    /// `LIST [msg]`.
    List(Option<String>),
    /// `RETR msg`.
    Retr(String),
    /// `DELE msg`.
    Dele(String),
    /// `NOOP`.
    Noop,
    /// `RSET`.
    Rset,
    /// `QUIT`.
    Quit,
    /// `TOP msg n`.
    Top(String, String),
    /// `UIDL [msg]`.
    Uidl(Option<String>),
    /// `CAPA` (RFC 2449).
    Capa,
    /// `STLS` (RFC 2595).
    Stls,
    /// Any other keyword, as sent.
    Unknown(String),
}

/// Parses one command line (without its CRLF). The error is the text of the `-ERR` reply.
pub fn parse_command(line: &[u8]) -> Result<Command, String> {
    let line = std::str::from_utf8(line).map_err(|_| "command is not valid UTF-8".to_string())?;
    let (keyword, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let keyword_upper = keyword.to_ascii_uppercase();
    let mut args = rest.split_ascii_whitespace();
    let mut one = |what: &str| -> Result<String, String> {
        args.next()
            .map(str::to_string)
            .ok_or_else(|| format!("{keyword_upper} needs {what}"))
    };
    let cmd = match keyword_upper.as_str() {
        "USER" => {
            let name = rest.trim();
            if name.is_empty() {
                return Err("USER needs a user name (your full address, user@domain)".into());
            }
            Command::User(name.to_string())
        }
        "PASS" => {
            if rest.is_empty() {
                return Err("PASS needs a password".into());
            }
            Command::Pass(rest.to_string())
        }
        "APOP" => Command::Apop,
        "AUTH" => {
            let mechanism = args.next().map(str::to_ascii_uppercase);
            let initial_response = args.next().map(|s| s.as_bytes().to_vec());
            Command::Auth {
                mechanism,
                initial_response,
            }
        }
        "STAT" => Command::Stat,
        "LIST" => Command::List(args.next().map(str::to_string)),
        "RETR" => Command::Retr(one("a message number")?),
        "DELE" => Command::Dele(one("a message number")?),
        "NOOP" => Command::Noop,
        "RSET" => Command::Rset,
        "QUIT" => Command::Quit,
        "TOP" => {
            let msg = one("a message number and a line count")?;
            let lines = one("a line count after the message number")?;
            Command::Top(msg, lines)
        }
        "UIDL" => Command::Uidl(args.next().map(str::to_string)),
        "CAPA" => Command::Capa,
        "STLS" => Command::Stls,
        "" => return Err("empty command".into()),
        _ => Command::Unknown(keyword.chars().take(40).collect()),
    };
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keywords_case_insensitively() {
        assert_eq!(parse_command(b"stat"), Ok(Command::Stat));
        assert_eq!(
            parse_command(b"LiSt 3"),
            Ok(Command::List(Some("3".into())))
        );
        assert_eq!(
            parse_command(b"TOP 1 10"),
            Ok(Command::Top("1".into(), "10".into()))
        );
        assert_eq!(
            parse_command(b"PASS a b  c"),
            Ok(Command::Pass("a b  c".into()))
        );
        assert_eq!(
            parse_command(b"AUTH plain AGEAYg=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial_response: Some(b"AGEAYg==".to_vec())
            })
        );
    }

    #[test]
    fn reports_missing_arguments() {
        assert!(parse_command(b"RETR")
            .unwrap_err()
            .contains("message number"));
        assert!(parse_command(b"TOP 1").unwrap_err().contains("line count"));
        assert!(parse_command(b"USER ").is_err());
        assert!(parse_command(b"").is_err());
        assert!(parse_command(&[0xff, 0xfe]).is_err());
    }
}
