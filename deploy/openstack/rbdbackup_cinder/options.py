"""oslo.config options of the rbdbackup Cinder backup driver (in [DEFAULT], as Cinder's Ceph backup
driver keeps its backup_ceph_* options), and the client config built from them."""

from __future__ import annotations

from oslo_config import cfg

from rbdbackup_client import ClientConfig

rbdbackup_opts = [
    cfg.ListOpt("rbdbackup_coordinators", default=[],
                help="host:port of the rbdbackup coordinator(s): the leader and its standbys, tried in "
                     "order (a standby names the leader, which is then used)."),
    cfg.StrOpt("rbdbackup_ca_file",
               help="PEM file of the CA that signs the coordinator's certificate."),
    cfg.StrOpt("rbdbackup_cert_file",
               help="PEM client certificate (mutual TLS). With rbdbackup_key_file; or use a token."),
    cfg.StrOpt("rbdbackup_key_file", help="PEM key of rbdbackup_cert_file."),
    cfg.StrOpt("rbdbackup_token", secret=True,
               help="API bearer token (role operator; admin for import_record), instead of a client "
                    "certificate."),
    cfg.StrOpt("rbdbackup_tls_server_name",
               help="Host name the coordinator's certificate must name. Default: "
                    "coordinator.rbdbackup.invalid, which deploy/tls/gen-certs.sh gives a coordinator's "
                    "certificate only (so an agent's certificate from the same CA is refused). Set it to "
                    "the coordinator's host name for certificates from another CA."),
    cfg.BoolOpt("rbdbackup_insecure", default=False,
                help="Plaintext gRPC, no authentication. Only for tests; refused with rbdbackup_token (the "
                     "token would cross the network in cleartext)."),
    cfg.StrOpt("rbdbackup_backup_cluster",
               help="The rbdbackup cluster name (as its agents register it) that keeps the backups."),
    cfg.StrOpt("rbdbackup_backup_pool", default="backups",
               help="Pool of the backup cluster for backups (Cinder's backup container; a backup's "
                    "own container wins, if rbdbackup_allowed_containers lists it)."),
    cfg.ListOpt("rbdbackup_allowed_containers", default=[],
                help="Pools of the backup cluster a backup may name as its container besides "
                     "rbdbackup_backup_pool. Any Cinder user may set a backup's container "
                     "(--container), and rbdbackup writes the backup into that pool: a backup naming "
                     "another container is refused (InvalidBackup). Default: none, only "
                     "rbdbackup_backup_pool."),
    cfg.StrOpt("rbdbackup_copied_volumes_pool", default="cinder-copies",
               help="The pool name under which rbdbackup lists the backups this driver copies rather than "
                    "snapshots (volumes that are not RBD, and Cinder snapshots): each is a backup of "
                    "<rbdbackup_backup_cluster>/<this>/volume-<id> (a snapshot's: .../snapshot-<id>). No such pool need exist; a driver "
                    "identity that rbdbackup's scopes confine needs a volume scope covering it."),
    cfg.DictOpt("rbdbackup_cluster_map", default={},
                help="Cinder volume backend name -> rbdbackup cluster name of the Ceph cluster holding "
                     "that backend's volumes, e.g. 'ceph-a:site-a,ceph-b:site-b'. The backend is the "
                     "part after '@' in the volume's host."),
    cfg.StrOpt("rbdbackup_default_volume_cluster",
               help="Cluster of volumes whose backend is not in rbdbackup_cluster_map."),
    cfg.IntOpt("rbdbackup_max_snapshots", default=0, min=0, max=1000,
               help="Backup snapshots to keep on a source volume (0 = only what the chains need; at most "
                    "1000, the API's limit)."),
    cfg.IntOpt("rbdbackup_call_timeout", default=30, min=1,
               help="Deadline of each call to the coordinator, seconds."),
    cfg.IntOpt("rbdbackup_call_attempts", default=10, min=1,
               help="Attempts of a call answered UNAVAILABLE (exponential backoff between them, up to "
                    "10 s; 10 attempts wait ~28 s on average, so a call rides out a coordinator "
                    "failover — a standby takes over in about 6 s, then the agents reconnect)."),
    cfg.FloatOpt("rbdbackup_backoff_base", default=0.5, min=0,
                 help="First backoff between attempts, seconds (doubles, with jitter)."),
    cfg.IntOpt("rbdbackup_job_timeout", default=86400, min=1,
               help="How long a backup, restore or delete may take before the driver gives up (a "
                    "backup or restore is then cancelled), seconds."),
    cfg.IntOpt("rbdbackup_unreachable_timeout", default=600, min=1,
               help="How long no coordinator may answer while the driver follows a job before it gives "
                    "up on it, seconds."),
    cfg.FloatOpt("rbdbackup_status_check_interval", default=10.0, min=0.05,
                 help="While a backup or restore runs, how often the driver reads the Cinder backup's "
                      "status, seconds: a backup being force-deleted (deleting) has its job cancelled, "
                      "and a restore whose backup left 'restoring' (reset-state) is cancelled and ends "
                      "as Cinder's BackupRestoreCancel — as Cinder's chunked drivers check it."),
]

CONF = cfg.CONF
CONF.register_opts(rbdbackup_opts)


def client_config(conf: cfg.ConfigOpts = CONF) -> ClientConfig:
    """The client's config; ValueError (BackupDriverException for the driver) for a combination that must
    not run."""
    if conf.rbdbackup_insecure and conf.rbdbackup_token:
        # The client would send the token as a plaintext header on every call: anyone on the path could
        # read it and call the API with its role.
        raise ValueError("rbdbackup_insecure (plaintext gRPC) would send rbdbackup_token in cleartext: set "
                         "rbdbackup_ca_file and rbdbackup_insecure = false to send it over TLS, or unset "
                         "rbdbackup_token")
    return ClientConfig(
        addresses=list(conf.rbdbackup_coordinators),
        ca_file=conf.rbdbackup_ca_file,
        cert_file=conf.rbdbackup_cert_file,
        key_file=conf.rbdbackup_key_file,
        token=conf.rbdbackup_token,
        insecure=conf.rbdbackup_insecure,
        server_name=conf.rbdbackup_tls_server_name,
        call_timeout=float(conf.rbdbackup_call_timeout),
        attempts=conf.rbdbackup_call_attempts,
        backoff_base=conf.rbdbackup_backoff_base,
        unreachable_timeout=float(conf.rbdbackup_unreachable_timeout),
    )
