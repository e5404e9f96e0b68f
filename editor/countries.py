"""Country names (sovereign states and a few widely used short forms), for contrastive draws and token init."""

from __future__ import annotations

COUNTRIES: tuple[str, ...] = tuple(
    """Afghanistan Albania Algeria Andorra Angola Argentina Armenia Australia Austria Azerbaijan Bahamas Bahrain
Bangladesh Barbados Belarus Belgium Belize Benin Bhutan Bolivia Bosnia Botswana Brazil Brunei Bulgaria Burundi
Cambodia Cameroon Canada Chad Chile China Colombia Comoros Congo Croatia Cuba Cyprus Czechia Denmark Djibouti
Dominica Ecuador Egypt Eritrea Estonia Eswatini Ethiopia Fiji Finland France Gabon Gambia Georgia Germany Ghana
Greece Grenada Guatemala Guinea Guyana Haiti Honduras Hungary Iceland India Indonesia Iran Iraq Ireland Israel
Italy Jamaica Japan Jordan Kazakhstan Kenya Kiribati Kosovo Kuwait Kyrgyzstan Laos Latvia Lebanon Lesotho Liberia
Libya Liechtenstein Lithuania Luxembourg Madagascar Malawi Malaysia Maldives Mali Malta Mauritania Mauritius Mexico
Micronesia Moldova Monaco Mongolia Montenegro Morocco Mozambique Myanmar Namibia Nauru Nepal Netherlands Nicaragua
Niger Nigeria Norway Oman Pakistan Palau Palestine Panama Paraguay Peru Philippines Poland Portugal Qatar Romania
Russia Rwanda Samoa Senegal Serbia Seychelles Singapore Slovakia Slovenia Somalia Spain Sudan Suriname Sweden
Switzerland Syria Taiwan Tajikistan Tanzania Thailand Togo Tonga Tunisia Turkey Turkmenistan Tuvalu Uganda Ukraine
Uruguay Uzbekistan Vanuatu Venezuela Vietnam Yemen Zambia Zimbabwe""".split()
) + (
    "Antigua and Barbuda",
    "Burkina Faso",
    "Cabo Verde",
    "Central African Republic",
    "Costa Rica",
    "Dominican Republic",
    "East Timor",
    "El Salvador",
    "Equatorial Guinea",
    "Guinea-Bissau",
    "Ivory Coast",
    "Marshall Islands",
    "New Zealand",
    "North Korea",
    "North Macedonia",
    "Papua New Guinea",
    "Saint Kitts and Nevis",
    "Saint Lucia",
    "Saint Vincent and the Grenadines",
    "San Marino",
    "Sao Tome and Principe",
    "Saudi Arabia",
    "Sierra Leone",
    "Solomon Islands",
    "South Africa",
    "South Korea",
    "South Sudan",
    "Sri Lanka",
    "Trinidad and Tobago",
    "United Arab Emirates",
    "United Kingdom",
    "United States",
    "Vatican City",
)
