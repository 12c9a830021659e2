<?php
/**
 * wikiops: LocalSettings.php for MediaWiki on ECS Fargate.
 *
 * The example configuration object: upload it to s3://<CONFIG_BUCKET>/<CONFIG_PREFIX>LocalSettings.php
 * (the config-redeploy function rolls it out). Works on MediaWiki 1.39 (Debian) and 1.43 (the image).
 *
 * Every secret and endpoint comes from the task's environment (the task definition, Secrets
 * Manager through `valueFrom`); an unset or empty one stops the request with HTTP 503 and a
 * log line naming the variable, never its value. Never write a secret into this file: the
 * bucket and its versions are readable by more people than the secrets are.
 */

if ( !defined( 'MEDIAWIKI' ) ) {
	exit;
}

if ( !function_exists( 'wikiopsSetting' ) ) {
	/**
	 * The trimmed value of a required environment variable; stops when it is unset or empty.
	 */
	function wikiopsSetting( string $name ): string {
		$value = getenv( $name );
		if ( $value !== false && trim( $value ) !== '' ) {
			return trim( $value );
		}
		$message = "wikiops: required setting $name is unset or empty";
		if ( PHP_SAPI === 'cli' ) {
			fwrite( STDERR, "$message\n" );
		} else {
			error_log( $message );
			http_response_code( 503 );
			header( 'Retry-After: 30' );
			header( 'Content-Type: text/plain' );
			echo "The wiki is not configured: $name is missing.\n";
		}
		exit( 1 );
	}

	/**
	 * An optional environment variable, or $default when unset or empty.
	 */
	function wikiopsOptional( string $name, ?string $default = null ): ?string {
		$value = getenv( $name );
		return ( $value === false || trim( $value ) === '' ) ? $default : trim( $value );
	}
}

# --- Site ----------------------------------------------------------------------------------
$wgSitename = wikiopsOptional( 'WIKI_NAME', 'Wiki' );
$wgLanguageCode = wikiopsOptional( 'WIKI_LANGUAGE', 'en' );

# The public origin from the hostname setting, the same on every task (never a task's IP).
$wgServer = rtrim( wikiopsSetting( 'WIKI_SERVER' ), '/' );
$wgCanonicalServer = $wgServer;
$wgScriptPath = '';
$wgResourceBasePath = $wgScriptPath;

# The image's own logo (wiki/assets/wikiops-logo.svg), instead of MediaWiki's "Set $wgLogos"
# placeholder; replace it with yours (an upload's URL or a file in the image).
$wgLogos = [
	'1x' => "$wgResourceBasePath/resources/assets/wikiops-logo.svg",
	'icon' => "$wgResourceBasePath/resources/assets/wikiops-logo.svg",
];

# TLS ends at the load balancer; MediaWiki reads X-Forwarded-Proto and Apache sets HTTPS=on.
# Redirect plain HTTP and mark cookies secure when the public origin is https.
$wgForceHTTPS = strncmp( $wgServer, 'https://', 8 ) === 0;
$wgCookieSecure = $wgForceHTTPS;

# The load balancer's addresses: X-Forwarded-For is trusted from the VPC only.
$wgCdnServersNoPurge = [ wikiopsSetting( 'VPC_CIDR' ) ];

$wgSecretKey = wikiopsSetting( 'WIKI_SECRET_KEY' );
$wgAuthenticationTokenVersion = '1';

# --- Database (RDS MySQL) --------------------------------------------------------------------
$wgDBtype = 'mysql';
$wgDBserver = wikiopsSetting( 'DB_HOST' ) . ':' . wikiopsOptional( 'DB_PORT', '3306' );
$wgDBname = wikiopsSetting( 'DB_NAME' );
$wgDBuser = wikiopsSetting( 'DB_USER' );
$wgDBpassword = wikiopsSetting( 'DB_PASSWORD' );
$wgDBprefix = wikiopsOptional( 'DB_PREFIX', '' );
$wgDBTableOptions = 'ENGINE=InnoDB, DEFAULT CHARSET=binary';
$wgDBssl = !in_array( strtolower( wikiopsOptional( 'DB_TLS', '1' ) ), [ '0', 'false', 'no', 'off' ], true );
# The schema task alone gets an admin user (DB_ADMIN_USER): its maintenance scripts
# (update.php) log in with it. Web requests and jobs use the wiki's own user, which may change
# data but not the schema.
$wikiopsAdminUser = wikiopsOptional( 'DB_ADMIN_USER' );
# ($wgDBadminuser is left unset on purpose: MediaWiki 1.39 then appends a second, identical
# server to $wgDBservers and update.php waits forever for that "replica".)
if ( $wikiopsAdminUser !== null && PHP_SAPI === 'cli' ) {
	$wgDBuser = $wikiopsAdminUser;
	$wgDBpassword = wikiopsSetting( 'DB_ADMIN_PASSWORD' );
}
$wikiopsCaBundle = wikiopsOptional( 'DB_CA_BUNDLE' );
if ( $wgDBssl && $wikiopsCaBundle !== null ) {
	# Verify the server against the RDS CA bundle: the same server as above, with its CA
	# (flags and table prefix default to DBO_DEFAULT and $wgDBprefix).
	$wgDBservers = [ [
		'host' => $wgDBserver,
		'dbname' => $wgDBname,
		'user' => $wgDBuser,
		'password' => $wgDBpassword,
		'type' => $wgDBtype,
		'load' => 1,
		'ssl' => true,
		'sslCAFile' => $wikiopsCaBundle,
	] ];
}

# --- Caches and sessions, shared by every task -----------------------------------------------
# A cache cluster (ElastiCache Memcached, MEMCACHED_SERVERS=host:port,...) when configured,
# else the database. Never APCu: a session must survive landing on another task.
$wikiopsMemcached = wikiopsOptional( 'MEMCACHED_SERVERS' );
if ( $wikiopsMemcached !== null ) {
	$wgMainCacheType = CACHE_MEMCACHED;
	$wgMemCachedServers = array_values( array_filter( array_map( 'trim', explode( ',', $wikiopsMemcached ) ) ) );
} else {
	$wgMainCacheType = CACHE_DB;
}
$wgSessionCacheType = $wgMainCacheType;
$wgParserCacheType = CACHE_DB;
$wgMessageCacheType = $wgMainCacheType;
# Localisation cache: files on the task's own disk when a directory is given (faster), else the DB.
$wgCacheDirectory = wikiopsOptional( 'WIKI_CACHE_DIR' ) ?? false;

# --- Jobs --------------------------------------------------------------------------------------
# Web requests run no jobs; a scheduled task runs `wiki-boot jobs` (maintenance/runJobs.php).
$wgJobRunRate = 0;

# --- Uploads on EFS ----------------------------------------------------------------------------
# The EFS access point is mounted at <web root>/images, owned by www-data (uid 33).
$wgEnableUploads = true;
$wgUploadDirectory = rtrim( wikiopsOptional( 'WEB_ROOT', $IP ), '/' ) . '/images';
$wgUploadPath = "$wgScriptPath/images";
$wgMaxUploadSize = 100 * 1024 * 1024;
$wgUseImageMagick = is_executable( '/usr/bin/convert' );
$wgImageMagickConvertCommand = '/usr/bin/convert';

# --- Task identity -----------------------------------------------------------------------------
# Handed over by wiki-boot from the ECS task metadata endpoint. Only the task id and zone are
# shown (to tell which task served a response); the private address stays inside.
$wikiopsTask = [
	'arn' => wikiopsOptional( 'WIKI_TASK_ARN' ),
	'id' => wikiopsOptional( 'WIKI_TASK_ID' ),
	'zone' => wikiopsOptional( 'WIKI_AVAILABILITY_ZONE' ),
	'ip' => wikiopsOptional( 'WIKI_PRIVATE_IP' ),
];
if ( PHP_SAPI !== 'cli' && $wikiopsTask['id'] !== null && !headers_sent() ) {
	header( 'X-Served-By: ' . $wikiopsTask['id'] . ' ' . ( $wikiopsTask['zone'] ?? '' ) );
}

# --- Skin and behaviour ------------------------------------------------------------------------
wfLoadSkin( 'Vector' );
$wgDefaultSkin = 'vector';
$wgEnableEmail = false;
$wgEnableUserEmail = false;
$wgShowExceptionDetails = false;
