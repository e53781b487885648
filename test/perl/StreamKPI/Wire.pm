# A minimal client of PostgreSQL's extended query protocol, for tests that
# must send parameters in binary (a type's receive function is reachable
# from SQL only that way) and pipeline many executions of one statement.
#
#   my $conn = StreamKPI::Wire->connect($node, 'postgres');
#   $conn->prepare('s', 'SELECT $1::streamkpi.topn IS NOT NULL', $topn_oid);
#   my $results = $conn->execute_many('s', [ [ $bytes1 ], [ $bytes2 ] ], [ 1 ]);
#   # each: { sqlstate => '22P03', message => ... } or { rows => [ [ 't' ] ] }
#
# Only trust authentication over the node's Unix socket is supported,
# which is what PostgreSQL::Test::Cluster sets up.
package StreamKPI::Wire;

use strict;
use warnings;

use Carp;
use IO::Socket::UNIX;

sub connect
{
	my ($class, $node, $dbname) = @_;
	my $path = $node->host . '/.s.PGSQL.' . $node->port;
	my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path)
	  or croak "cannot connect to $path: $!";
	my $self = bless { sock => $sock }, $class;
	my $params = join('', map { "$_\0" } user => scalar(getpwuid($<)),
		database => $dbname) . "\0";
	$self->_write(pack('NN', 8 + length($params), 196608) . $params);
	$self->_until_ready('startup');
	return $self;
}

sub _write
{
	my ($self, $data) = @_;
	my $off = 0;
	while ($off < length($data))
	{
		my $n = syswrite($self->{sock}, $data, length($data) - $off, $off);
		croak "write to the server failed: $!" unless defined $n;
		$off += $n;
	}
	return;
}

sub _read_exact
{
	my ($self, $n) = @_;
	my $buf = '';
	while (length($buf) < $n)
	{
		my $got = sysread($self->{sock}, $buf, $n - length($buf), length($buf));
		croak "the server closed the connection" unless $got;
	}
	return $buf;
}

# one message: (type, body)
sub _read_message
{
	my ($self) = @_;
	my ($type, $len) = unpack('aN', $self->_read_exact(5));
	return ($type, $self->_read_exact($len - 4));
}

sub _error_fields
{
	my ($body) = @_;
	my %f;
	for my $field (split /\0/, $body)
	{
		$f{ substr($field, 0, 1) } = substr($field, 1) if length $field;
	}
	return { sqlstate => $f{C}, message => $f{M}, detail => $f{D} };
}

# Read until ReadyForQuery; croaks on an error (setup steps only).
sub _until_ready
{
	my ($self, $what) = @_;
	for (;;)
	{
		my ($type, $body) = $self->_read_message;
		if ($type eq 'R')
		{
			my $code = unpack('N', $body);
			croak "$what: authentication method $code is not supported" if $code != 0;
		}
		elsif ($type eq 'E')
		{
			my $e = _error_fields($body);
			croak "$what: $e->{sqlstate} $e->{message}";
		}
		return if $type eq 'Z';
	}
}

sub _cstring { return "$_[0]\0"; }

# A named statement with the given parameter type OIDs.
sub prepare
{
	my ($self, $name, $sql, @types) = @_;
	my $body = _cstring($name) . _cstring($sql) . pack('n', scalar @types)
	  . join('', map { pack('N', $_) } @types);
	$self->_write('P' . pack('N', 4 + length $body) . $body . "S\0\0\0\4");
	$self->_until_ready("prepare $name");
	return;
}

sub _bind_execute_sync
{
	my ($params, $formats, $name) = @_;
	my $body = _cstring('') . _cstring($name) . pack('n', scalar @$formats)
	  . join('', map { pack('n', $_) } @$formats) . pack('n', scalar @$params);
	for my $p (@$params)
	{
		$body .= defined $p ? pack('N', length $p) . $p : pack('l>', -1);
	}
	$body .= pack('n', 0);			# results in text
	return 'B' . pack('N', 4 + length $body) . $body
	  . 'E' . pack('N', 9) . "\0" . pack('N', 0) . "S\0\0\0\4";
}

# Execute statement $name once per parameter list, each in its own
# transaction (an error ends only its own execution), pipelined in groups
# of 200.  $formats: one format code per parameter (0 text, 1 binary).
# Returns one result per execution, in order.
sub execute_many
{
	my ($self, $name, $param_lists, $formats) = @_;
	my @results;
	for (my $i = 0; $i < @$param_lists; $i += 200)
	{
		my @group = @$param_lists[ $i .. ($i + 199 < $#$param_lists ? $i + 199 : $#$param_lists) ];
		$self->_write(join('', map { _bind_execute_sync($_, $formats, $name) } @group));
		for (1 .. @group)
		{
			my $r = { rows => [] };
			for (;;)
			{
				my ($type, $body) = $self->_read_message;
				if ($type eq 'E')
				{
					$r = _error_fields($body);
				}
				elsif ($type eq 'D')
				{
					my ($n, @cols) = (unpack('n', $body));
					my $pos = 2;
					for (1 .. $n)
					{
						my $len = unpack('l>', substr($body, $pos, 4));
						$pos += 4;
						push @cols, $len < 0 ? undef : substr($body, $pos, $len);
						$pos += $len if $len > 0;
					}
					push @{ $r->{rows} }, \@cols;
				}
				last if $type eq 'Z';
			}
			push @results, $r;
		}
	}
	return \@results;
}

sub close
{
	my ($self) = @_;
	$self->_write("X\0\0\0\4");
	close $self->{sock};
	return;
}

1;
