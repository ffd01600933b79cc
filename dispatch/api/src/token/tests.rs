use super::*;
use proptest::prelude::*;

fn token(id: [u8; 8], secret: [u8; 32], ca: [u8; 32]) -> JoinToken {
    JoinToken {
        id: TokenId(id),
        secret: Zeroizing::new(secret),
        ca: CaFingerprint(ca),
    }
}

#[test]
fn known_text() {
    let t = token([0xab; 8], [0x01; 32], [0xff; 32]);
    let text = t.to_string();
    assert_eq!(text.len(), 150);
    assert!(text.starts_with("bx1.abababababababab.0101"));
    assert_eq!(JoinToken::parse(&text).unwrap(), t);
    assert!(
        !format!("{t:?}").contains("0101"),
        "Debug must redact the secret"
    );
}

#[test]
fn rejections_name_the_problem() {
    let good = token([0xab; 8], [2; 32], [3; 32]).to_string();
    assert!(matches!(
        JoinToken::parse(&good.replacen("bx1", "bx2", 1)),
        Err(TokenFormat::WrongPrefix { .. })
    ));
    assert_eq!(
        JoinToken::parse(&format!("{good}.x")),
        Err(TokenFormat::WrongPartCount { found: 5 })
    );
    assert_eq!(
        JoinToken::parse(&good.to_uppercase().replacen("BX1", "bx1", 1)),
        Err(TokenFormat::BadField {
            field: "token id",
            len: 16
        })
    );
}

proptest! {
    #[test]
    fn round_trips(id in any::<[u8; 8]>(), secret in any::<[u8; 32]>(), ca in any::<[u8; 32]>()) {
        let t = token(id, secret, ca);
        prop_assert_eq!(JoinToken::parse(&t.to_string()), Ok(t.clone()));
        prop_assert_eq!(JoinToken::parse(&format!("  {t}\n")), Ok(t));
    }

    #[test]
    fn never_panics(text in ".{0,200}") {
        let _ = JoinToken::parse(&text);
    }

    #[test]
    fn any_single_character_change_is_refused_or_changes_the_token(
        id in any::<[u8; 8]>(), secret in any::<[u8; 32]>(), ca in any::<[u8; 32]>(),
        pos in 0usize..150, c in proptest::char::range(' ', '~'),
    ) {
        let t = token(id, secret, ca);
        let mut text: Vec<char> = t.to_string().chars().collect();
        prop_assume!(text[pos] != c);
        text[pos] = c;
        let mutated: String = text.into_iter().collect();
        if let Ok(parsed) = JoinToken::parse(&mutated) {
            prop_assert_ne!(parsed, t);
        }
    }
}
