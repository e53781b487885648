# A real Apache Kafka broker for TAP tests, driven through test/kafka/broker,
# with kcat for producing and reading messages.
#
#   my $kafka = StreamKPI::Kafka->start('main');
#   my $secure = StreamKPI::Kafka->start('auth', sasl_users => { alice => 'pw' });
#   $secure->sasl_bootstrap;   # a SASL_PLAINTEXT listener (PLAIN) for those users
#   $kafka->create_topic('listens', 4);
#   $kafka->produce('listens', [ '{"a":1}', '{"a":2}' ], partition => 0);
#   my @msgs = $kafka->consume('listens');   # hashes: partition offset key payload ts
#   $kafka->stop;  $kafka->restart;  $kafka->pause;  $kafka->resume;
#   my $slow = $kafka->throttle(0.9, 0.1);  ...;  $slow->stop;
#
# Each broker lives in its own directory under the test's tmp_check and is
# stopped when the test ends.
package StreamKPI::Kafka;

use strict;
use warnings;

use Carp;
use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use POSIX ();
use Test::More ();
use Time::HiRes ();

my $broker_script = File::Spec->rel2abs(
	File::Spec->catfile(dirname(__FILE__), '..', '..', 'kafka', 'broker'));

my @started;

sub _run_script
{
	my ($self, @args) = @_;
	my ($out, $err);
	local $ENV{KAFKA_DIR} = $self->{dir};
	local $ENV{KAFKA_SASL_USERS} = $self->{sasl_users} // '';
	my $ok = IPC::Run::run([ $broker_script, @args ], '>', \$out, '2>', \$err);
	croak "broker @args failed: $err" unless $ok;
	chomp $out;
	return $out;
}

# Start a broker named $name (a directory of the test's own); returns the
# object.  Option sasl_users => { user => password, ... } also opens a
# SASL_PLAINTEXT listener (mechanism PLAIN) for those users.
sub start
{
	my ($class, $name, %opt) = @_;
	$name //= 'kafka';
	my $self = bless {
		name => $name,
		dir => "$PostgreSQL::Test::Utils::tmp_check/kafka_$name",
	}, $class;
	if ($opt{sasl_users})
	{
		$self->{sasl_users} = join(',',
			map { "$_:$opt{sasl_users}{$_}" } sort keys %{ $opt{sasl_users} });
	}
	$self->{bootstrap} = $self->_run_script('start');
	if ($self->{sasl_users})
	{
		$self->{sasl_bootstrap} =
		  PostgreSQL::Test::Utils::slurp_file("$self->{dir}/sasl_address");
		chomp $self->{sasl_bootstrap};
	}
	Test::More::note "Kafka broker '$name' at $self->{bootstrap}"
	  . ($self->{sasl_bootstrap} ? ", SASL/PLAIN at $self->{sasl_bootstrap}" : '');
	push @started, $self;
	return $self;
}

sub bootstrap { return $_[0]->{bootstrap}; }

# host:port of the SASL_PLAINTEXT listener, when started with sasl_users
sub sasl_bootstrap { return $_[0]->{sasl_bootstrap}; }

sub stop
{
	my ($self) = @_;
	$self->_run_script('stop');
	return;
}

# Start again on the same port with the same data.
sub restart
{
	my ($self) = @_;
	$self->{bootstrap} = $self->_run_script('start');
	return;
}

# Freeze the broker's process (SIGSTOP): connections stay open, nothing is
# answered; resume() lets it go on (SIGCONT).
sub pause
{
	my ($self) = @_;
	kill 'STOP', $self->_pid or croak "could not stop the broker's process";
	return;
}

sub resume
{
	my ($self) = @_;
	kill 'CONT', $self->_pid or croak "could not resume the broker's process";
	return;
}

# Make the broker slow but alive: from now on it is frozen for $stopped
# seconds out of every $stopped + $running, until the returned guard's
# stop() (or its destruction) leaves it running.
sub throttle
{
	my ($self, $stopped, $running) = @_;
	my $pid = $self->_pid;
	my $child = fork() // croak "fork: $!";
	if ($child == 0)
	{
		my $done = 0;
		local $SIG{TERM} = sub { $done = 1; };
		until ($done)
		{
			kill 'STOP', $pid;
			Time::HiRes::sleep($stopped);
			kill 'CONT', $pid;
			Time::HiRes::sleep($running) unless $done;
		}
		kill 'CONT', $pid;
		POSIX::_exit(0);
	}
	return bless { child => $child }, 'StreamKPI::Kafka::Throttle';
}

sub _pid
{
	my ($self) = @_;
	my $pid = PostgreSQL::Test::Utils::slurp_file("$self->{dir}/pid");
	chomp $pid;
	return $pid;
}

sub is_running
{
	my ($self) = @_;
	local $ENV{KAFKA_DIR} = $self->{dir};
	return IPC::Run::run([ $broker_script, 'status' ], '>', \my $out, '2>', \my $err);
}

sub create_topic
{
	my ($self, $topic, $partitions, %config) = @_;
	$self->_run_script('create-topic', $topic, $partitions,
		map { "$_=$config{$_}" } sort keys %config);
	return;
}

# The kcat command that produces to $topic, with more kcat arguments.
# Idempotent (acks=all): a batch retried after a transient error, say on a
# topic whose leader is not yet elected, neither overtakes the next batch nor
# lands twice, so offsets follow the input's order.
sub producer_command
{
	my ($self, $topic, @args) = @_;
	return ('kcat', '-b', $self->{bootstrap}, '-t', $topic, '-P',
		'-X', 'enable.idempotence=true', @args);
}

# Produce one message per element of @$lines (no newlines inside).
# Options: partition => N, key_delimiter => "\t" (each line is key<delim>value).
sub produce
{
	my ($self, $topic, $lines, %opt) = @_;
	my @cmd = $self->producer_command($topic, '-X', 'linger.ms=5');
	push @cmd, '-p', $opt{partition} if defined $opt{partition};
	push @cmd, '-K', $opt{key_delimiter} if defined $opt{key_delimiter};
	my $in = join('', map { "$_\n" } @$lines);
	my ($out, $err);
	IPC::Run::run(\@cmd, '<', \$in, '>', \$out, '2>', \$err)
	  or croak "kcat could not produce to $topic: $err";
	croak "kcat reported errors producing to $topic: $err" if $err =~ /error/i;
	return scalar @$lines;
}

# Read a topic from the beginning to its end; returns hashes sorted by
# partition and offset.
sub consume
{
	my ($self, $topic) = @_;
	my @cmd = ('kcat', '-b', $self->{bootstrap}, '-t', $topic, '-C', '-e',
		'-q', '-J', '-o', 'beginning');
	my ($out, $err);
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err)
	  or croak "kcat could not consume $topic: $err";
	my $json = JSON::PP->new;
	my @msgs = map {
		my $m = $json->decode($_);
		{
			partition => $m->{partition},
			offset => $m->{offset},
			key => $m->{key},
			payload => $m->{payload},
			ts => $m->{ts},
		}
	} grep { /\S/ } split /\n/, $out;
	return sort { $a->{partition} <=> $b->{partition} || $a->{offset} <=> $b->{offset} } @msgs;
}

package StreamKPI::Kafka::Throttle;

sub stop
{
	my ($self) = @_;
	return unless $self->{child};
	kill 'TERM', $self->{child};
	waitpid($self->{child}, 0);
	$self->{child} = undef;
	return;
}

sub DESTROY { $_[0]->stop; }

package StreamKPI::Kafka;

END
{
	my $rc = $?;
	for my $broker (@started)
	{
		eval { $broker->stop };
	}
	$? = $rc;
}

1;
