# Random mutations of valid inputs, for hostile-input tests: bit flips,
# truncations, length-field edits, inserted and deleted bytes, and
# characters that matter to JSON and CSV.  Deterministic for a given
# srand() seed.
#
#   srand(20251205);
#   my $bad = StreamKPI::Mutate::binary($bytes, \@fields);  # fields: [offset, size]
#   my $bad = StreamKPI::Mutate::text($json_or_csv);
package StreamKPI::Mutate;

use strict;
use warnings;

my @boundary32 = (0, 1, 2, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff,
	0x80000000, 0xfffffffe, 0xffffffff);
my @boundary64 = ('0000000000000000', '0000000000000001', '7fffffffffffffff',
	'8000000000000000', 'ffffffffffffffff', '00000000ffffffff');

sub _pos { return int(rand($_[0] + 1)); }

sub flip_bits
{
	my ($s) = @_;
	return $s if $s eq '';
	for (1 .. 1 + int(rand(3)))
	{
		my $i = int(rand(length $s));
		substr($s, $i, 1) = chr(ord(substr($s, $i, 1)) ^ (1 << int(rand(8))));
	}
	return $s;
}

sub truncate_at
{
	my ($s) = @_;
	return substr($s, 0, int(rand(length $s)));
}

# a length or count field set to a boundary, or nudged by one
sub edit_field
{
	my ($s, $fields) = @_;
	return flip_bits($s) unless @$fields;
	my ($off, $size) = @{ $fields->[ int(rand(@$fields)) ] };
	return $s if $off + $size > length $s;
	my $new;
	if ($size == 4)
	{
		my $old = unpack('N', substr($s, $off, 4));
		my @choices = (@boundary32, ($old + 1) % 2**32, ($old - 1) % 2**32,
			int(rand(2**32)));
		$new = pack('N', $choices[ int(rand(@choices)) ]);
	}
	else
	{
		$new = pack('H*', $boundary64[ int(rand(@boundary64)) ]);
		$new = substr($s, $off, $size) ^ pack('Q>', 1 << int(rand(63))) if rand() < 0.3;
	}
	substr($s, $off, $size) = $new;
	return $s;
}

sub insert_bytes
{
	my ($s, @alphabet) = @_;
	my $n = 1 + int(rand(8));
	my $ins = join('', map { @alphabet ? $alphabet[ int(rand(@alphabet)) ] : chr(int(rand(256))) } 1 .. $n);
	substr($s, _pos(length $s), 0) = $ins;
	return $s;
}

sub delete_bytes
{
	my ($s) = @_;
	return $s if $s eq '';
	my $at = int(rand(length $s));
	substr($s, $at, 1 + int(rand(8))) = '';
	return $s;
}

# A binary value with its length and count fields at @$fields.
sub binary
{
	my ($s, $fields) = @_;
	for (1 .. 1 + int(rand(2)))
	{
		my $op = int(rand(5));
		$s = $op == 0 ? flip_bits($s)
		  : $op == 1 ? truncate_at($s)
		  : $op == 2 ? edit_field($s, $fields)
		  : $op == 3 ? insert_bytes($s)
		  : delete_bytes($s);
	}
	return $s;
}

# characters and fragments that JSON and CSV parsers treat specially
my @specials = ('{', '}', '[', ']', '"', ',', ':', '\\', '\\u', '\\ud800', '\\u0000',
	"\n", "\r", "\t", ' ', '-', '.', 'e', '0', '9', 'null', 'true', "\x00",
	"\xc3", "\xff", "\xe2\x82", '""', ',,,,', '1e400', '9223372036854775808',
	'-0', 'NaN');

sub text
{
	my ($s) = @_;
	for (1 .. 1 + int(rand(3)))
	{
		my $op = int(rand(8));
		if ($op == 0) { $s = flip_bits($s); }
		elsif ($op == 1) { $s = truncate_at($s); }
		elsif ($op == 2) { $s = delete_bytes($s); }
		elsif ($op == 3) { $s = insert_bytes($s, @specials); }
		elsif ($op == 4) { $s = insert_bytes($s); }
		elsif ($op == 5)
		{
			# a number replaced by a boundary
			my @nums;
			push @nums, [ $-[0], $+[0] - $-[0] ] while $s =~ /-?\d+/g;
			if (@nums)
			{
				my ($at, $len) = @{ $nums[ int(rand(@nums)) ] };
				substr($s, $at, $len) = (qw(0 -1 2147483648 -9223372036854775809
					9223372036854775807 100001 1e309 0.5))[ int(rand(8)) ];
			}
		}
		elsif ($op == 6)
		{
			# a part repeated many times: deep nesting, many fields, long values
			my $at = _pos(length $s);
			my $len = 1 + int(rand(4));
			substr($s, $at, 0) = substr($s, $at, $len) x (50 + int(rand(1500)));
		}
		else
		{
			# two parts swapped
			my ($a, $b) = sort { $a <=> $b } (_pos(length $s), _pos(length $s));
			$s = substr($s, 0, $a) . substr($s, $b) . substr($s, $a, $b - $a);
		}
	}
	return $s;
}

1;
