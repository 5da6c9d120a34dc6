//! The eviction reading: parsing, the schedule under paused time, and real redis-servers.

use super::*;

fn info(limit: &str, policy: &str) -> String {
    format!(
        "# Memory\r\nused_memory:1048576\r\nmaxmemory:{limit}\r\nmaxmemory_human:x\r\n\
         maxmemory_policy:{policy}\r\nallocator_frag_ratio:1.0\r\n"
    )
}

#[test]
fn only_a_limit_with_an_evicting_policy_may_evict() {
    assert_eq!(parse(&info("0", "allkeys-lru")), Some(Eviction::Unlimited));
    assert_eq!(
        parse(&info("1073741824", "noeviction")),
        Some(Eviction::Never)
    );
    for policy in [
        "allkeys-lru",
        "volatile-ttl",
        "volatile-lru",
        "allkeys-random",
    ] {
        assert_eq!(
            parse(&info("1073741824", policy)),
            Some(Eviction::May {
                policy: policy.to_owned(),
                limit: 1_073_741_824
            })
        );
    }
}

/// Asks at the paused clock's times, answering from `replies` in turn; the limiter goes
/// once they run out. Returns the seconds (from the start) at which Redis was asked.
async fn asked_at(replies: Vec<Reading>) -> Vec<u64> {
    let start = tokio::time::Instant::now();
    let (limiter, rx) = tokio::sync::mpsc::channel::<()>(1);
    let alive = limiter.downgrade();
    let mut limiter = Some(limiter);
    let mut replies = replies.into_iter();
    let mut asked = Vec::new();
    let ask = || {
        asked.push(start.elapsed().as_secs());
        let reply = replies.next().unwrap_or_else(|| {
            limiter = None;
            Reading::Silent
        });
        std::future::ready(reply)
    };
    poll(ask, alive).await;
    drop(rx);
    asked
}

#[tokio::test(start_paused = true)]
async fn silence_is_asked_about_again_within_seconds_then_less_and_less_often() {
    use Reading::{Mute, Silent};
    let never = || Reading::Verdict(Eviction::Never);
    // Away at start: 1, 2, 4 s apart; then every five minutes, and after a silence again
    // from one second.
    assert_eq!(
        asked_at(vec![
            Silent,
            Silent,
            Silent,
            never(),
            never(),
            Silent,
            never()
        ])
        .await,
        [0, 1, 3, 7, 307, 607, 608, 908]
    );
    // A Redis that never answers is asked at most every five minutes.
    let times = asked_at(vec![Silent; 12]).await;
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    // One that answers without a verdict would say the same again: five minutes.
    assert_eq!(
        asked_at(vec![Silent, Silent, Mute, Silent, Mute]).await,
        [0, 1, 3, 303, 304, 604]
    );
}

/// A port nothing listens on (at the time of asking).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A redis-server of the test's own, stopped when dropped, also when the test fails.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// redis-server on `port` with an evicting policy, once it answers; `None` (with a notice)
/// when it is not installed, outside CI.
fn redis_server(port: u16) -> Option<Server> {
    let spawned = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(child) = spawned else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server must be installed when CI=true"
        );
        eprintln!("NOTICE: eviction reading test skipped: no redis-server binary");
        return None;
    };
    let server = Server(child);
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("redis-server did not listen on {port}");
}

// Workers of its own, as in the service: the connection manager's new attempt runs (and
// fails) while this test starts redis-server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_came_back_is_read_at_the_next_reading() {
    let port = free_port();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
    // No retries inside a connection attempt: each one fails at once while nothing listens.
    let config = redis::aio::ConnectionManagerConfig::new().set_number_of_retries(0);
    let mut conn = ConnectionManager::new_lazy_with_config(client, config).expect("lazy");
    let patience = Duration::from_secs(5);
    assert_eq!(check(&mut conn, patience).await, Reading::Silent);
    // The second reading is handed the first attempt's failure; its own try makes a new
    // attempt, and waits for it to fail too. That failure is now stored.
    assert_eq!(check(&mut conn, patience).await, Reading::Silent);
    let Some(_server) = redis_server(port) else {
        return;
    };
    // Handed that stored failure, the reading tries once more, on a fresh connection.
    let reading = check(&mut conn, patience).await;
    assert_eq!(
        reading,
        Reading::Verdict(Eviction::May {
            policy: "allkeys-lru".into(),
            limit: 1 << 30
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_refused_by_an_acl_is_an_answer_and_this_sides_errors_are_not() {
    // Errors raised on this side, not by Redis: asked about again within seconds.
    for kind in [
        redis::ErrorKind::Client,
        redis::ErrorKind::UnexpectedReturnType,
        redis::ErrorKind::Parse,
        redis::ErrorKind::Io,
    ] {
        let e = redis::RedisError::from((kind, "on this side"));
        assert_eq!(answered_or_not(&e), Reading::Silent, "{kind:?}");
    }
    // Error replies, as Redis sends them: one that asks to be retried is no answer, one
    // that would come again (a known code or one of a managed service's own) is.
    let reply = |line: &str| match redis::parse_redis_value(line.as_bytes()) {
        Ok(redis::Value::ServerError(e)) => redis::RedisError::from(e),
        other => panic!("not an error reply: {other:?}"),
    };
    for line in [
        "-LOADING Redis is loading the dataset in memory\r\n",
        "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
        "-MASTERDOWN Link with MASTER is down\r\n",
    ] {
        assert_eq!(answered_or_not(&reply(line)), Reading::Silent, "{line}");
    }
    for line in [
        "-NOPERM User watcher has no permissions to run the 'info' command\r\n",
        "-ERR unknown command 'INFO'\r\n",
        "-DENIED by the provider\r\n",
    ] {
        assert_eq!(answered_or_not(&reply(line)), Reading::Mute, "{line}");
    }
    let port = free_port();
    let Some(_server) = redis_server(port) else {
        return;
    };
    let admin = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
    let mut admin = admin
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    // A user that may run everything but INFO, as a managed Redis may hand out.
    let () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER", "watcher", "on", ">secret", "~*", "+@all", "-info",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let client =
        redis::Client::open(format!("redis://watcher:secret@127.0.0.1:{port}")).expect("url");
    let mut conn = ConnectionManager::new(client).await.expect("connect");
    let denied = check(&mut conn, Duration::from_secs(5)).await;
    // The same user may read a key: the connection works, only INFO is refused.
    let read: Option<String> = redis::cmd("GET")
        .arg("anything")
        .query_async(&mut conn)
        .await
        .expect("GET as watcher");
    assert_eq!(read, None);
    assert_eq!(denied, Reading::Mute);
}

#[test]
fn a_reply_without_the_fields_claims_nothing() {
    assert_eq!(parse(""), None);
    assert_eq!(parse("maxmemory:0\r\n"), None);
    assert_eq!(parse("maxmemory_policy:noeviction\r\n"), None);
    assert_eq!(parse(&info("lots", "noeviction")), None);
    // `maxmemory_human` and `maxmemory_policy` share the prefix but are other fields.
    assert_eq!(
        parse("maxmemory_human:0B\r\nmaxmemory_policy:allkeys-lru\r\n"),
        None
    );
}
