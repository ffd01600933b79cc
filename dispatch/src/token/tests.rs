use super::*;
use proptest::prelude::*;

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
fn check_order_and_limits_with_injected_clock() {
    let secret = [9u8; 32];
    let rec = record(&secret, 2000, 1);
    assert_eq!(rec.check(&secret, UnixTime(1999)), Ok(()));
    assert_eq!(
        rec.check(&secret, UnixTime(2000)),
        Err(TokenRejected::Expired {
            id: rec.id,
            expired_at: UnixTime(2000)
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
    fn only_the_right_secret_redeems(secret in any::<[u8; 32]>(), other in any::<[u8; 32]>()) {
        prop_assume!(secret != other);
        let rec = record(&secret, 2000, 1);
        prop_assert_eq!(rec.check(&other, UnixTime(1500)), Err(TokenRejected::WrongSecret(rec.id)));
    }
}
