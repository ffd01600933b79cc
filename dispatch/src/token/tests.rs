use super::*;
use proptest::prelude::*;

fn token(id: [u8; 8], secret: [u8; 32], ca: [u8; 32]) -> JoinToken {
    JoinToken {
        id: TokenId(id),
        secret: Zeroizing::new(secret),
        ca: CaFingerprint(ca),
    }
}

fn record(secret: &[u8; 32], expires: u64, uses: u32) -> TokenRecord {
    TokenRecord {
        id: TokenId([1; 8]),
        name: "robot-7".into(),
        secret_hash: hash_secret(secret),
        created_at: UnixTime(1000),
        expires_at: UnixTime(expires),
        uses_left: uses,
        uses_total: uses,
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

#[test]
fn check_order_and_limits_with_injected_clock() {
    let secret = [9u8; 32];
    let rec = record(&secret, 2000, 1);
    assert_eq!(rec.check(&secret, UnixTime(1999)), Ok(()));
    assert_eq!(
        rec.check(&secret, UnixTime(2000)),
        Err(TokenRejected::Expired {
            id: rec.id,
            expired_at: 2000
        })
    );
    // A wrong secret is reported as such even after expiry: no state leaks.
    assert_eq!(
        rec.check(&[8u8; 32], UnixTime(5000)),
        Err(TokenRejected::WrongSecret(rec.id))
    );
    let used = rec.redeemed();
    assert_eq!(used.uses_left, 0);
    assert_eq!(
        used.check(&secret, UnixTime(1500)),
        Err(TokenRejected::UsedUp {
            id: rec.id,
            uses: 1
        })
    );
    let multi = record(&secret, 2000, 3);
    let after_two = multi.redeemed().redeemed();
    assert_eq!(after_two.check(&secret, UnixTime(1500)), Ok(()));
    assert!(after_two.redeemed().check(&secret, UnixTime(1500)).is_err());
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

    #[test]
    fn only_the_right_secret_redeems(secret in any::<[u8; 32]>(), other in any::<[u8; 32]>()) {
        prop_assume!(secret != other);
        let rec = record(&secret, 2000, 1);
        prop_assert_eq!(rec.check(&other, UnixTime(1500)), Err(TokenRejected::WrongSecret(rec.id)));
    }
}
